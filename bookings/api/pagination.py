"""Pages of the customer API's lists: `?page=` is a whole number from 1, given once; anything
else a 400."""

from __future__ import annotations

import re

from rest_framework import pagination
from rest_framework.exceptions import ValidationError

# ASCII digits only, not zero: Python's int() (DRF's and Django's reading) also takes `+1`, ` 1 `,
# `1_0` (ten), `1.0` and other scripts' digits (fullwidth, Arabic-Indic).
_PAGE = re.compile(r"0*[1-9][0-9]*")
NOT_A_PAGE = "Give a whole number from 1, in the digits 0-9 alone (e.g. `2`)."


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
        if page is not None and not _PAGE.fullmatch(page):
            raise ValidationError({self.page_query_param: [NOT_A_PAGE]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
