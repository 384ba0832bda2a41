"""Fix a potential: StABlE training (and, as they land, dynamic and conservative training)."""
