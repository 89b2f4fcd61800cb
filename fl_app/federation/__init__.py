"""Who takes part and how a round runs: roles (honest or Byzantine), seeded sampling, the loop."""
