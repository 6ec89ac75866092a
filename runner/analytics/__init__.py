"""Business analytics (CONTRACT section 7): the terminal report, the integrity checks of
the rollups, and the GA4 export. The figures themselves are computed in the database
(sql/functions/analytics_*.sql); this package only reads and ships them."""
