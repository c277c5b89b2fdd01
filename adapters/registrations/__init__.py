"""The event-registration system (seed 002): its home.

``adapter`` (the provider: stream pulls, 2-way registration requests), ``data`` (reading its
pages and requests), ``emulator`` (the system on loopback).
"""
