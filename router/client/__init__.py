"""Clients: one per bound name, load balanced over keep-alive connection pools."""
