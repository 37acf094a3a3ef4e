"""``ami-daemon demo``: a day of recorded calls through the real daemon (see ``runner``)."""
