"""Forecast settings on the demo (validation MSE decides; test shown for the record).

Usage: python bench/experiments/forecast_settings.py METHOD ENCODER_JSON|- SETTINGS_JSON [SETTINGS_JSON ...]
Writes nothing under results/ (the records go to /tmp/cap/bench).
"""

import json
import logging
import sys
import time

from brainjepa.capabilities.forecast import ForecastConfig, run_forecast

logging.basicConfig(level=logging.WARNING)
method, spec = sys.argv[1], (None if sys.argv[2] == "-" else json.loads(sys.argv[2]))
for i, text in enumerate(sys.argv[3:]):
    t0 = time.perf_counter()
    r = run_forecast(method, 0, "results/shards", ["ukbsim"], f"/tmp/cap/bench/{method}_{i}.json",
                     ForecastConfig.from_dict(json.loads(text)), spec)
    print(f"{text}: val mse {r['val']['mse']:.4f} r2 {r['val']['r2']:.4f} | test r2 {r['test']['r2']:.4f} "
          f"r {r['test']['r']:.4f} mse {r['test']['mse']:.4f} | epoch {r['selected']['epoch']} "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
