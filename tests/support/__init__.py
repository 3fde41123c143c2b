"""Helpers the tests share: clocks, people, recordings, servers, browsers."""
