"""The hotel CRM bulk sync (seed 001): its home.

``adapter`` (the provider: contacts and purchases), ``emulator`` (the CRM on loopback, with its
webhook).
"""
