"""What every clawlan HTTP service shares at the LAN's door: the server, the router's front and the front end.

``identity`` (the self-signed TLS certificate whose fingerprint discovery pins),
``limits`` (body cap and deadline, request-head deadline) and ``listen`` (the
listening socket). One copy here, so a fix to one door is a fix to all.
"""
