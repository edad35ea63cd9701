"""The page `movierec serve` shows at ``/``: plain HTML, CSS and JavaScript, no build step, nothing external."""
