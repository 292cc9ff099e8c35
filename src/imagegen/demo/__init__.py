"""The embedded demo model's world: a procedural "shapes" scene renderer, caption grammar and rule-based analyser."""
