"""Drawing for people: captioned tiles and legends, heat maps, label overlays, token maps (numpy/PIL)."""
