from django.db import models


class BaselineItem(models.Model):
    """A row with a few columns, created by the baseline endpoint."""

    name = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
