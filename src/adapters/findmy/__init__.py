"""The Find My adapter: reports fetched from Apple or a compatible endpoint, decrypted by
findmy."""
