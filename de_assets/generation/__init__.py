"""Generation: simulated source systems (an OLTP shop database and a clickstream landing folder)."""
