"""EgoClip (EgoVLP's ``egoclip.csv``) as initialization captions for the ego encoder (and EgoIT-schema rows)."""
