"""Platforms: the HTTP shapes and response rules of OpenWhisk and of Knative."""
