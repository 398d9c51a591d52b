"""Layer-wise Relevance Propagation (Bach et al. 2015; rules as in Montavon et al. 2019, "Layer-wise relevance
propagation: an overview").

The target logit f_c(x) is the output relevance (R = f_c on the target, 0 elsewhere); each step of the model's chain
(layerwise.chain) passes relevance to its input a by one rule, for every layer:
- Dense and Conv2D (a folded BatchNormalization included), by the method's rule:
    epsilon: R_i = a_i sum_j w_ij R_j / (z_j + eps sign(z_j)),  z_j = sum_i a_i w_ij + b_j
    z+:      R_i = sum_j z+_ij / z+_j R_j,  z+_ij = (a_i w_ij)^+ = a_i^+ w_ij^+ + a_i^- w_ij^-  (biases left out;
             for non-negative inputs, ReLU activations and [0, 1] pixels, the deep Taylor z+ rule a_i w_ij^+)
    alpha-beta: R_i = sum_j (alpha z+_ij / (z+_j + b+_j) - beta z-_ij / (z-_j + b-_j)) R_j,  alpha - beta = 1
- average pooling (AveragePooling2D, GlobalAveragePooling2D): R_i = a_i w_ij R_j / z_j, its weights w_ij = 1/n
  being positive (the z-rule, stabilised by epsilon for lrp_epsilon; alpha-beta's negative part would be 0 there);
- max pooling (MaxPooling2D, GlobalMaxPooling2D): winner-take-all (all of an output's relevance to the input that
  attained the max, routed as its gradient routes it);
- ReLU activations, Flatten, Reshape, Dropout, InputLayer: passed through unchanged (reshaped).
Each J^T s is one gradient of the linear map (the "gradient trick"), so a whole chunk of images runs through one
traced function per model and rule. In bias-free nets z+ and alpha-beta conserve relevance (sum_i R_i = f_c(x)),
and epsilon -> 0 gives Gradient ⊙ Input.
"""

from __future__ import annotations

import numpy as np

from ..errors import SanityError
from ..params import Number
from .engine import chunked
from .registry import register
from .traced import traced

# Keeps z+ > 0 and z- < 0 away from zero (a neuron without positive contributions passes no relevance).
STABILIZER = 1e-9


def _relevance(steps, x, targets, rule: str, epsilon, alpha, beta):
    """R of the input pixels, (B, *shape): forward through the steps, then the rules backward."""
    import tensorflow as tf

    from .layerwise import AFFINE, AVGPOOL, MAXPOOL, RESHAPE

    activations = [x]
    for step in steps:
        activations.append(step.post(step.pre(activations[-1])))
    logits = activations[-1]
    relevance = tf.one_hot(targets, tf.shape(logits)[-1], dtype=tf.float32) * logits

    def redistribute(parts, inputs, r, denominator):
        """sum_p inputs_p ⊙ J_p^T (r / denominator(z)), z = sum_p part_p(inputs_p): one gradient for all parts
        (r / 0 = 0: with epsilon 0 a neuron whose inputs are all 0 passes nothing)."""
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            z = tf.add_n([part(a) for part, a in zip(parts, inputs)])
        grads = tape.gradient(z, inputs, output_gradients=tf.math.divide_no_nan(r, denominator(z)))
        return tf.add_n([a * g for a, g in zip(inputs, grads)])

    def linear_rule(step, a, r):
        if rule == "epsilon" or step.kind == AVGPOOL:  # average pooling: the z-rule under every rule
            stabilizer = epsilon if rule == "epsilon" else STABILIZER
            return redistribute([step.linear], [a], r, lambda z: z + stabilizer * tf.where(z >= 0, 1.0, -1.0))
        a_pos, a_neg = tf.nn.relu(a), tf.minimum(a, 0.0)

        def part(sign, bias):
            return lambda v: step.linear(v, sign, bias)

        def contributions(sign, bias=False):
            """(parts, inputs) whose sum is z+ (sign=+1) or z- (sign=-1): w+ a+ + w- a-, or w- a+ + w+ a-; the
            positive (negative) bias once, with the first part, when `bias`."""
            pairs = [(part(sign, bias), a_pos), (part(-sign, False), a_neg)]
            return [p for p, _ in pairs], [v for _, v in pairs]

        positive = redistribute(*contributions(1, rule == "alpha_beta"), r, lambda z: z + STABILIZER)
        if rule == "zplus":
            return positive
        negative = redistribute(*contributions(-1, True), r, lambda z: z - STABILIZER)
        return alpha * positive - beta * negative

    for step, a in zip(reversed(steps), reversed(activations[:-1])):
        if step.kind in (AFFINE, AVGPOOL):
            relevance = linear_rule(step, a, relevance)
        elif step.kind == MAXPOOL:
            with tf.GradientTape() as tape:
                tape.watch(a)
                pooled = step.pre(a)
            relevance = tape.gradient(pooled, a, output_gradients=relevance)
        elif step.kind == RESHAPE:
            relevance = tf.reshape(relevance, tf.shape(a))
        # identity steps (ReLU activations): relevance passes unchanged
    return relevance


def lrp(model, images, targets, rule: str, options, *, epsilon: float = 0.0, alpha: float = 1.0,
        beta: float = 0.0) -> np.ndarray:
    """The rule's relevance maps of every image, options.batch_size images per traced call."""
    from .layerwise import chain

    method = f"lrp_{rule}"

    def build(jit: bool):
        import tensorflow as tf

        steps = chain(model, method, lrp=True)

        @tf.function(input_signature=(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32),
                                      tf.TensorSpec([None], tf.int32), tf.TensorSpec([3], tf.float32)),
                     jit_compile=jit, autograph=False)
        def relevance_fn(x, targets, coefficients):
            return _relevance(steps, x, targets, rule, coefficients[0], coefficients[1], coefficients[2])

        return relevance_fn

    fn = traced(model, ("lrp", rule), options, build)
    import tensorflow as tf

    coefficients = tf.constant([epsilon, alpha, beta], tf.float32)
    return chunked(lambda xs, ts: (fn(tf.constant(xs), tf.constant(ts), coefficients).numpy(),), options.batch_size,
                    np.asarray(images, np.float32), np.asarray(targets, np.int32))[0]


@register("lrp_epsilon", params={"epsilon": Number(1e-6, low=0)})
def lrp_epsilon(model, images, targets, *, epsilon: float, options, seed=0) -> np.ndarray:
    """LRP-epsilon at every Dense/Conv2D: R_i = a_i sum_j w_ij R_j / (z_j + eps sign z_j). The default 1e-6 only
    stabilises (the map is then Gradient ⊙ Input on bias-free ReLU nets); larger values absorb weak relevance."""
    return lrp(model, images, targets, "epsilon", options, epsilon=epsilon)


@register("lrp_zplus", params={})
def lrp_zplus(model, images, targets, *, options, seed=0) -> np.ndarray:
    """LRP-z+ at every Dense/Conv2D: R_i = sum_j (a_i w_ij)^+ / sum_i' (a_i' w_i'j)^+ R_j, biases left out."""
    return lrp(model, images, targets, "zplus", options)


@register("lrp_alpha_beta", params={"alpha": Number(1.0, low=0), "beta": Number(0.0, low=0)})
def lrp_alpha_beta(model, images, targets, *, alpha: float, beta: float, options, seed=0) -> np.ndarray:
    """LRP-alpha-beta at every Dense/Conv2D: positive contributions (and positive biases) weighted by alpha,
    negative ones by beta, alpha - beta = 1 (Bach et al. 2015)."""
    if abs(alpha - beta - 1.0) > 1e-9:
        raise SanityError(f"lrp_alpha_beta: alpha - beta must be 1 (relevance is conserved), got alpha={alpha:g}, "
                          f"beta={beta:g}; e.g. alpha=2, beta=1")
    return lrp(model, images, targets, "alpha_beta", options, alpha=alpha, beta=beta)
