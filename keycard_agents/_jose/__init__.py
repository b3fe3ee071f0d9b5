"""The JOSE layer: signing keys, JWT verification, token claims, the verified principal.

No network: fetching keys from issuers is the OAuth layer's work (``_oauth``).
"""
