//! Steering plans: directions x schedules x layer weights x gate, evaluated per generation step
//! into one vector per decoder block.
