"""The classroom: lessons (loading, checking, their facts), rooms, votes and the broker that
carries a teacher's changes to every student. No web imports."""
