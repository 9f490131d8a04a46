"""baton's own Procrastinate tasks (autodiscovered by procrastinate.contrib.django)."""
