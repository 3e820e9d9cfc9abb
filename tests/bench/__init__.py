"""Performance guards (marked ``bench``, outside the default suite): short
runs against real server processes that fail only on a large regression."""
