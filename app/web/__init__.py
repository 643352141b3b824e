"""The page kit every feature shares: templates and the htmx rule, dependencies, static assets, the
UI languages, and how a refusal is shown. It knows no feature."""
