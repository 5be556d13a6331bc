"""matplotlib without a display, and writing a figure: shared by the plotting tools."""
import os


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, out_path, dpi):
    """Lay out, write `out_path` (its folder created if needed) and free the figure."""
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    figure.savefig(out_path, dpi=dpi)
    pyplot().close(figure)
