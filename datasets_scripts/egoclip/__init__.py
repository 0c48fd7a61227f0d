"""EgoClip (EgoVLP's ``egoclip.csv``) as EgoIT-schema captioning rows, for the ego encoder's initialization stage."""
