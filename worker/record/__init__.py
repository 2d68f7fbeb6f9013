"""The evidence record: the store port, custody chains, verified reads of what is stored, fixity."""
