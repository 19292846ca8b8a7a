"""Plain-Python building blocks of integration_hub: no ORM, tested without a database.

The models import from here; nothing here imports from odoo.
"""
