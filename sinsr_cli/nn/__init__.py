"""Small stateless-in-spirit building blocks shared by the models."""
