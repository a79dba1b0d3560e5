"""The sections of `python -m bench.run`, one module each (produce, batch, wspublish, fanout,
retention, compression; each has a `bench_<name>(cfg, tmp, report)`), and what they share:
config.py (the run's settings), report.py (rows and the rendered table), servers.py (starting
and stopping the measured servers), http_produce.py (HTTP produce load and request bodies).
The load generators and baselines they drive are the modules directly in bench/."""
