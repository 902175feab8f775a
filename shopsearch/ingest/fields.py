"""The catalog fields shopsearch understands (docs/DESIGN.md, "Catalog and ingest")."""

REQUIRED_FIELDS = ("id", "title")
OPTIONAL_FIELDS = (
    "description",
    "brand",
    "category",
    "price",
    "currency",
    "color",
    "size",
    "in_stock",
    "parent_id",
    "attributes",
    "url",
    "image_url",
)
CATALOG_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
