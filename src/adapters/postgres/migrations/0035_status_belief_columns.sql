-- The evidence rule's belief in fixed columns (issue 12, speed). A belief is nearly always
-- "in transit", possibly ELSEWHERE (before the first status) and at most one fence: those
-- now live in plain columns, which the status step reads and writes as they are. Reading
-- the three arrays element by element (and building them on every write) was about half of
-- the cost of reading a checkpoint. A wider belief (several fences within reach) stays in
-- the arrays, with the fixed columns NULL; exactly one of the two holds a belief.
--
-- No rewrite of existing rows: a row written before keeps its arrays until its tracker's
-- next batch writes it in the new form (both forms are read).
ALTER TABLE tracker_status
    ADD COLUMN belief_transit    double precision,  -- P(in transit); NULL: no belief here
    ADD COLUMN belief_elsewhere  double precision,  -- P(ELSEWHERE); NULL: not in the belief
    ADD COLUMN belief_fence_id   uuid,              -- the belief's one fence; NULL: none
    ADD COLUMN belief_fence_kind text CHECK (belief_fence_kind IN ('DELIVERY', 'STORAGE')),
    ADD COLUMN belief_fence_p    double precision;
