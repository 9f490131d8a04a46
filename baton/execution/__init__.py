"""Running workflows on Procrastinate: insert, the step wrapper and its gate, advancing."""
