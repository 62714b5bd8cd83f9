"""Views: figures that draw what they are given, the explorer page, Markdown and LaTeX export."""
