"""CKKS parameters chosen from a model's multiplicative depth at a named security level, and the checks a server
runs on a context it receives.

One ciphertext holds one feature of up to ``N / 2`` samples (feature-major SIMD packing), so a model's linear layers
are plaintext-scalar products and sums: no rotations, hence no Galois keys, and the public context stays small.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import tenseal as ts

# Largest total coefficient-modulus bits per ring degree N for classical security, from the Homomorphic Encryption
# Standard (Albrecht et al. 2018), as SEAL enforces them (hestdparms.h).
MAX_COEFF_BITS: dict[int, dict[int, int]] = {
    128: {4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MAX_PRIME_BITS = 60  # SEAL's limit for one RNS prime
MIN_SCALE_BITS = 25  # below this CKKS' rounding noise reaches ~1e-3 on unit values


class ParameterError(ValueError):
    """No CKKS parameters fit, or a received context does not fit the model (message names what and why)."""


@dataclass(frozen=True)
class CKKSParameters:
    """Ring degree N, the RNS primes' bit sizes (outer, ``depth`` × scale, special) and the scale 2^scale_bits."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    security: int = 128

    @property
    def depth(self) -> int:
        """Rescalings available: one per multiplication in sequence."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def slots(self) -> int:
        """Samples per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def context(self) -> ts.Context:
        """A fresh private context with relinearisation keys (the secret key is inside: keep it on the client)."""
        context = ts.context(ts.SCHEME_TYPE.CKKS, self.poly_modulus_degree, -1, list(self.coeff_mod_bit_sizes))
        context.global_scale = 2.0**self.scale_bits
        return context

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slots": self.slots, "depth": self.depth, "total_bits": self.total_bits}


def choose_parameters(depth: int, value_bits: int = 10, security: int = 128, scale_bits: int = 40) -> CKKSParameters:
    """The smallest ring that holds ``depth`` rescalings of ``scale_bits`` each at ``security`` bits, with an outer
    prime wide enough for outputs up to 2^value_bits (the decoded value must stay below the first prime / scale).
    """
    if security not in MAX_COEFF_BITS:
        raise ParameterError(f"security must be one of {sorted(MAX_COEFF_BITS)} bits, got {security}")
    if depth < 1:
        raise ParameterError(f"depth must be at least 1, got {depth}")
    outer = scale_bits + max(value_bits, 0) + 2
    if outer > MAX_PRIME_BITS:
        scale_bits = MAX_PRIME_BITS - max(value_bits, 0) - 2
        outer = MAX_PRIME_BITS
        if scale_bits < MIN_SCALE_BITS:
            raise ParameterError(
                f"outputs up to 2^{value_bits} leave a scale of 2^{scale_bits} (below 2^{MIN_SCALE_BITS}): "
                "rescale the model's targets"
            )
    bits = (outer, *([scale_bits] * depth), outer)
    for degree, limit in MAX_COEFF_BITS[security].items():
        if sum(bits) <= limit:
            # the ring is fixed by now (and with it the cost): spend the modulus bits left on precision
            while outer < MAX_PRIME_BITS and 2 * (outer + 1) + depth * (scale_bits + 1) <= limit:
                outer, scale_bits = outer + 1, scale_bits + 1
            return CKKSParameters(degree, (outer, *([scale_bits] * depth), outer), scale_bits, security)
    raise ParameterError(
        f"depth {depth} needs {sum(bits)} modulus bits: more than N = 32768 allows at {security}-bit security "
        f"({MAX_COEFF_BITS[security][32768]}); use a shallower model (fewer layers, degree-2 activations)"
    )


@dataclass(frozen=True)
class ContextFacts:
    """What a server can read from a received context."""

    poly_modulus_degree: int
    total_bits: int
    outer_bits: int
    depth: int
    scale_bits: float
    security: int  # the highest standard level the modulus meets (0: none)
    private: bool
    relin_keys: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_facts(context: ts.Context) -> ContextFacts:
    """Ring degree, modulus, levels, scale and security level of a (deserialised) CKKS context."""
    seal = context.seal_context().data
    if str(seal.key_context_data().parms().scheme()) != "SCHEME_TYPE.CKKS":
        raise ParameterError("the context is not a CKKS context")
    degree = seal.key_context_data().parms().poly_modulus_degree()
    total = seal.first_context_data().total_coeff_modulus_bit_count()  # without the special prime
    special = seal.key_context_data().total_coeff_modulus_bit_count() - total
    met = [level for level, limits in MAX_COEFF_BITS.items() if total + special <= limits.get(degree, 0)]
    return ContextFacts(
        poly_modulus_degree=degree,
        total_bits=total + special,
        outer_bits=seal.last_context_data().total_coeff_modulus_bit_count(),
        depth=seal.first_context_data().chain_index(),
        scale_bits=math.log2(context.global_scale) if context.global_scale > 0 else 0.0,
        security=max(met, default=0),
        private=context.is_private(),
        relin_keys=context.has_relin_keys(),
    )


def check_context(facts: ContextFacts, depth: int, value_bits: int, relin_keys: bool) -> None:
    """ParameterError naming the first way a received context cannot evaluate a model of this depth safely."""
    if facts.private:
        raise ParameterError(
            "the context holds a secret key: send the public context (make_context_public()); the secret key "
            "must never leave the client"
        )
    if facts.security < 128:
        raise ParameterError(
            f"N = {facts.poly_modulus_degree} with a {facts.total_bits}-bit modulus is below 128-bit security"
        )
    if facts.depth < depth:
        raise ParameterError(f"the context allows {facts.depth} multiplications in sequence; the model needs {depth}")
    if relin_keys and not facts.relin_keys:
        raise ParameterError("the context has no relinearisation keys; the model multiplies ciphertexts")
    if facts.scale_bits < MIN_SCALE_BITS:
        raise ParameterError(f"scale 2^{facts.scale_bits:.0f} is below 2^{MIN_SCALE_BITS}: results would be noise")
    if facts.outer_bits - facts.scale_bits < value_bits + 1:
        raise ParameterError(
            f"the first prime ({facts.outer_bits} bits) over the scale (2^{facts.scale_bits:.0f}) leaves no room "
            f"for the model's outputs (up to 2^{value_bits})"
        )
