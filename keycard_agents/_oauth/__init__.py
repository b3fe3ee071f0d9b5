"""The OAuth 2.0 layer: URLs and metadata, the HTTP policy, challenges, key discovery,
token verification for resource servers, the RFC 8693 exchange client and credentials.
"""
