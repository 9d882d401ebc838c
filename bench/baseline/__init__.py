"""A bare DRF model create: the baseline the customer API's throughput is compared with.

Installed only by `config.settings.bench`; its route lives in `config.urls_bench`.
"""
