"""The churn tool's database sync (seed 003): its home.

``adapter`` (the provider: file uploads, the signature rule), ``emulator`` (the tool on
loopback, with its signed callbacks).
"""
