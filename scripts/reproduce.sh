#!/usr/bin/env bash
# Re-run a named suite of sanity checks unattended, for crontab. Example (nightly at 03:00):
#   0 3 * * * /path/to/sanity/scripts/reproduce.sh paper_mnist >> /var/log/sanity-paper_mnist.log 2>&1
# Runs from the project directory (results land in ./results), with the Python that has sanity installed
# ($SANITY_PYTHON, default python3). Exit code: 0 same verdicts; 1 a verdict changed (printed);
# 2 a job failed; 75 the suite was still running from the previous cron call.
set -uo pipefail
cd "${SANITY_HOME:-$(dirname "$0")/..}" || exit 2
exec "${SANITY_PYTHON:-python3}" -m sanity_cli reproduce "${@:-smoke}"
