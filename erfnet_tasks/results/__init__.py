"""The results database: every figure the guide wrote into a Markdown table by hand, as rows.

``db`` finds and migrates the database, ``publish`` writes a run document (and its JSON file),
``queries`` reads run documents and history back, ``regression`` applies the regression rules,
``tables`` lays a run out like the guide's tables, ``reference`` holds the guide's published figures.
The schema only ever comes from the Alembic migrations under ``migrations/``.
"""
