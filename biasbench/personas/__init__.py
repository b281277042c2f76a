"""Synthetic personas: sampling a pool from population distributions, drawing balanced sets."""
