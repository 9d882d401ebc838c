"""Pages of the customer API's lists: `?page=` is a whole number from 1, given once; anything
else a 400."""

from __future__ import annotations

from rest_framework import pagination, serializers
from rest_framework.exceptions import ValidationError

_PAGE = serializers.IntegerField(min_value=1)


class PageNumberPagination(pagination.PageNumberPagination):
    # DRF also takes `?page=last`; our documented contract is numbers only.
    last_page_strings = ()

    def paginate_queryset(self, queryset, request, view=None):
        given = request.query_params.getlist(self.page_query_param)
        if len(given) > 1:  # DRF would silently serve the last one
            raise ValidationError(
                {self.page_query_param: [f"Give one page: `page` was given {len(given)} times."]}
            )
        page = request.query_params.get(self.page_query_param)
        if page is not None:
            try:
                _PAGE.run_validation(page)
            except ValidationError as exc:
                raise ValidationError({self.page_query_param: exc.detail}) from None
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
