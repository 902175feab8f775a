"""Product search over a collection: `ProductSearch` with its `Query` and `SearchOptions`,
the `--filter` grammar, typo correction, variant collapsing, facets and learned fusion."""
