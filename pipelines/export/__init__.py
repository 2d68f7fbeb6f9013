"""Delivery to prosecutors: a clip cut from a masked video, its transcript excerpt, its verification report."""
