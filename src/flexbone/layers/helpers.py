def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` without going below ``round_limit * v``.

    The rounding rule of the MobileNet/EfficientNet reference code (and timm), kept exactly so that
    channel counts, and therefore checkpoints, match.
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:  # never round down by more than 10%
        new_v += divisor
    return new_v
