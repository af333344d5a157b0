pytest_plugins = ["tests.fixtures_chain", "tests.fixtures_db"]
