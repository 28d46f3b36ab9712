"""Session-wide test setup: one persistent JAX compilation cache (tests/compile_cache.py)."""
import compile_cache


def pytest_configure(config):
    compile_cache.start()


def pytest_unconfigure(config):
    compile_cache.finish()
