"""Pictures: captioned tiles and legends, heat maps and label overlays, and AFA's per-image panels."""
