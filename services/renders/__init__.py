"""renders service: Renders and projects API; the render worker (second entry point) consumes render.jobs."""
