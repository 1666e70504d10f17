"""Windows of recent Good samples per tag and the feature vectors built from them."""
