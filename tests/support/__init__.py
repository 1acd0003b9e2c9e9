"""Helpers shared by the test modules: brokers, servers, events, images, settings, processes."""
