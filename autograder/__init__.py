"""The grading side of the course: release, hand-out, execution and grading of notebooks."""
