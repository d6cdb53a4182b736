-- Exact nearest city (issue 13): the nearest GeoNames place of all, districts included,
-- answers with its city (domain/geo.py has the rule). The KNN search needs every place in
-- the index, not only those that are part of none.
DROP INDEX IF EXISTS cities_position_gist;
CREATE INDEX cities_position_gist ON cities USING gist (position);

-- `part_of` now names the city a district stands for: the end of its chain of parents
-- (a village by Spandau, itself a district of Berlin, stands for Berlin). Cities loaded
-- before this migration held the direct parent: follow the chains once.
COMMENT ON COLUMN cities.part_of IS
    'the city this district stands for (domain.geo: district rule), NULL if it is no district';
DO $$
BEGIN
    LOOP
        UPDATE cities c SET part_of = p.part_of
        FROM cities p
        WHERE c.part_of = p.geonameid AND p.part_of IS NOT NULL;
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;
