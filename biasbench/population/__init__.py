"""Population profiles (tables + manifest with sources and hashes) and the draws that use them."""
