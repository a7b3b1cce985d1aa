"""Measuring models: size and cost (``complexity``), speed and memory side by side (``throughput``),
and presenting the numbers (``report``)."""
from .complexity import Complexity, build_on_meta, count_macs, count_params, model_complexity
from .report import format_markdown, format_table, write_results
from .throughput import BenchResult, BenchSettings, benchmark, environment, measure, prepare, ratios

__all__ = [
    "Complexity", "build_on_meta", "count_macs", "count_params", "model_complexity",
    "format_markdown", "format_table", "write_results",
    "BenchResult", "BenchSettings", "benchmark", "environment", "measure", "prepare", "ratios",
]
