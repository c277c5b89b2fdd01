"""The event-app favourites (seed 000): its home.

``adapter`` (the provider: two-way, a token per user), ``emulator`` (the app on loopback).
"""
